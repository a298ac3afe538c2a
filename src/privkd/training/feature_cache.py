"""Frozen backbones are computed once: their tokens are cached on disk and training reads them.

With a frozen backbone every epoch of every method on every fold would push each video clip
through the same fixed R3D-18 again. Instead its output tokens are computed once per
(dataset file, modality, backbone weights) and stored as a ``.npy`` file under
``$PRIVKD_CACHE/features``; the networks then start from the cached tokens (see
:data:`~privkd.models.network.TOKENS_SUFFIX`). Saved models still hold the whole backbone,
so a deployed student runs on raw inputs.

The key hashes the dataset file's identity (resolved path, size, modification time), the
modality and the exact backbone weights, so a re-imported dataset or other weights never
read a stale cache. Files are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from privkd.config.schema import RunConfig
from privkd.data.dataset import TOKENS_SUFFIX, MultimodalDataset
from privkd.data.embedded import default_cache_dir
from privkd.data.h5format import DatasetInfo
from privkd.data.importers.common import progress as progress_bar
from privkd.models.build import reference_backbone


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return digest.hexdigest()


def cache_file(data_path: str | Path, modality: str, backbone: nn.Module, cache_dir: str | Path | None = None) -> Path:
    """Where the tokens of ``backbone`` on ``modality`` of the dataset file live."""
    data_path = Path(data_path).resolve()
    stat = data_path.stat()
    key = hashlib.sha256(
        f"{data_path}|{stat.st_size}|{stat.st_mtime_ns}|{modality}|{weights_fingerprint(backbone)}".encode()
    ).hexdigest()[:24]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "features" / f"{data_path.stem}-{modality}-{key}.npy"


@torch.no_grad()
def compute_tokens(data_path: str | Path, modality: str, backbone: nn.Module, *, batch_size: int = 32,
                   show_progress: bool = True) -> np.ndarray:
    """Backbone tokens ``(n_samples, tokens, width)`` of every sample of ``modality``, in file order."""
    dataset = MultimodalDataset(data_path, [modality])
    backbone.eval()
    chunks = []
    batches = DataLoader(dataset, batch_size=batch_size)
    for batch in progress_bar(batches, f"caching {modality} features", enabled=show_progress):
        chunks.append(backbone(batch.inputs[modality]).float().numpy())
    return np.concatenate(chunks)


def cached_tokens(data_path: str | Path, modality: str, backbone: nn.Module, *, batch_size: int = 32,
                  cache_dir: str | Path | None = None, show_progress: bool = True) -> np.ndarray:
    """The tokens of ``backbone`` on ``modality``, computed on first use, then memory-mapped from disk."""
    path = cache_file(data_path, modality, backbone, cache_dir)
    if not path.is_file():
        tokens = compute_tokens(data_path, modality, backbone, batch_size=batch_size, show_progress=show_progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, tokens)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


CACHE_BATCH = 64
"""Samples per forward pass when caching tokens for a run whose batch size is not resolved yet."""


def frozen_backbone_tokens(cfg: RunConfig, info: DatasetInfo, data_path: Path,
                           progress: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The cached tokens of every frozen backbone of the run (``<modality>@tokens``), or none
    when ``model.cache_features`` is off."""
    if not cfg.model.cache_features:
        return {}
    tokens = {}
    for name in cfg.model.frozen_backbones:
        progress(f"features of the frozen {name} backbone (computed once, then cached)")
        tokens[name + TOKENS_SUFFIX] = cached_tokens(data_path, name, reference_backbone(cfg, info, name),
                                                     batch_size=CACHE_BATCH if cfg.training.batch_size == "auto"
                                                     else cfg.training.batch_size,
                                                     show_progress=cfg.training.progress_bar)
    return tokens
